"""Files users upload as inputs: LoRAs, start images for img2img, zips of photos."""
