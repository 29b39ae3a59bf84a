"""pbkv command-line interface."""
