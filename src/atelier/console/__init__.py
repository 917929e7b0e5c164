"""The web console: plain ES modules and CSS served by Atelier itself (no build step),
talking to the public API with the key the person signed in with."""
