# ferclient: the edge image. No torch, no CompressAI: ONNX Runtime + constriction.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY client client
COPY server server
COPY wire wire
COPY models models
# Base dependencies only; the server's .pt weights ride along in the package but are never loaded.
RUN pip install .
ENV FERCODEC_SERVER=server:50051
WORKDIR /data
ENTRYPOINT ["ferclient"]
CMD ["--help"]
