"""The daemon: configuration, scheduling, alerts, the command line and the HTTP server."""
