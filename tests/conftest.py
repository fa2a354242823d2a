"""Shared by every test folder: pytest puts this folder on `sys.path`, so tests import
`helpers` (and each other's builders, e.g. `test_images.handmade_png`) from any subfolder."""
