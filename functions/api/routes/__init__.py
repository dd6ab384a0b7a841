"""The API's routes, one module per capability (imported, in order, by ``functions/api/app.py``)."""
