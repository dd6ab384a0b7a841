"""The web console: static files (index.html, ES modules, styles.css), no build step.

``lifeboat up`` serves them at ``/console/`` (functions/embedded/http_server.py); in the cloud
they deploy as-is to any static host in front of the same REST API. Shipped as package data.
"""
