"""The console page in a real browser: Debian's Chromium through Playwright, against make serve and the real model."""
