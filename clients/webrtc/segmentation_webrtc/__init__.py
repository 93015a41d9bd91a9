"""A WebRTC gateway: a browser's camera in, the same video with its background replaced out."""
