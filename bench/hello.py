"""The bare FastAPI + uvicorn hello-world the API latency is compared with:
`uvicorn bench.hello:app --workers 2 --port 38001 --no-access-log` (plain HTTP on 127.0.0.1)."""

from fastapi import FastAPI

app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
