"""Core I/O: video and image reading and writing, clip cutting, shot detection, atomic files
and errors. Imports nothing of ours above it."""
