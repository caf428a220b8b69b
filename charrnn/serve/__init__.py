"""`charrnn serve`: trained runs over HTTP, for other programs and for a page where you write with
the model (charrnn/serve/app.py); the page's files ship in charrnn/serve/page/. FastAPI and
uvicorn are the optional extra `charrnn[serve]`."""
