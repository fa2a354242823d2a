"""The runner: records -> stage -> shards + manifest, on the local process pool or Ray Data;
the shard writer, reader and verifier, and the dataset report."""
