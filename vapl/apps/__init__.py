"""End-user tools: prediction on one image, scan reading, the demo, CRAYON's annotation commands."""
