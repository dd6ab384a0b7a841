"""Azure Functions entry points (Python v2 programming model) of the control plane.

``function_app.py`` holds the triggers, ``composition.py`` builds the ports from app
settings, ``http.py`` adapts ``func.HttpRequest`` to the API Gateway REST event that
``functions.api.app.resolve`` takes, and ``entra.py`` turns an App Service Authentication
principal into authorizer claims.
"""
