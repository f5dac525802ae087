"""The operator console: web pages and a JSON API over the storage's administration capability."""
