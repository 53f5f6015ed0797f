"""Step 3 of the user's journey: analyse every uploaded photo."""
