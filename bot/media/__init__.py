"""What people send besides text: documents, voice and photos, turned into
what the core works with (text and image parts). Channels only download."""
