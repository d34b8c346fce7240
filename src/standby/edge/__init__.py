"""What every HTTP edge shares (REST, the peer listener, the listeners gate): error bodies, texts."""
