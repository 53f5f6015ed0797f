"""Models: the trained LoRAs a training produces (table `models`, routes /v1/models, class `app.db.Model`)."""
