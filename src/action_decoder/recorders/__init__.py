"""recorders: programs that make recordings in the DuckTrack layout (synthetic desktop, real X11 desktop, MiniWoB++ in Chromium)."""
