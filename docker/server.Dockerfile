# ferserver. The PyPI torch wheel carries its own CUDA runtime, so a slim
# Python base serves GPUs too (run with --gpus all; needs the NVIDIA container
# toolkit on the host). Without a GPU it serves on the CPU.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protos protos
COPY client client
COPY server server
COPY wire wire
COPY models models
RUN pip install '.[server]'
EXPOSE 50051 9100
ENV FERCODEC_HOST=0.0.0.0 FERCODEC_DEVICE=auto
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=2)"
ENTRYPOINT ["ferserver"]
