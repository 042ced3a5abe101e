"""The image make sam-build made, through Docker and sam local (make test-image)."""
