"""The `soundflow` command line (click), a thin layer over the library."""
