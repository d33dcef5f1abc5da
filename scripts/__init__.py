"""Command-line entry points: each verb parses arguments and calls one library function."""
