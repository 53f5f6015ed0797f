"""Photos: upload, list, edit, delete, and the stored image variants."""
