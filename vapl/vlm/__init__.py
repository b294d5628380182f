"""Text prompts to attention maps with a vision-language model (open_clip), and their disk cache."""
