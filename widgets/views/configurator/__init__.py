"""The agency UI under /app/: shell pages, the configurator, preview and share links."""
