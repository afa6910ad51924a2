"""An existing web application that embeds runplane (see docs/embedding.md)."""
