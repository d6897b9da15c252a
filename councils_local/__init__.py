"""What runs on a user's machine, outside Ray Serve: the `councils` command (cli/) and `make run` (launcher.py, its steps in launch/)."""
