"""The web page: `GET /` and its static files, served from the package. It is one more client of
the REST API (it calls the same endpoints with the user's key); nothing here reads the database."""
