"""The class dashboard, served by the backend: plain JS and CSS, no build step (see README.md here)."""
