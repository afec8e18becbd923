# ferserver: decodes face bitstreams and classifies expressions (torch + CompressAI).
#   docker build -f docker/server.Dockerfile -t fercodec-server .
# BASE is any Debian-like image with Python 3.11, `python -m venv` and CA certificates.
# The default serves GPUs too: PyPI's torch wheel carries its CUDA runtime (run with
# --gpus all and the NVIDIA container toolkit); without a GPU it serves on the CPU.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes torch's CPU-only build
# instead, which leaves out the CUDA libraries (several GB; see README, Docker).
ARG BASE=python:3.11-slim

# The dependencies (base + [server]; no training or dev extras) as a requirements file. Only its
# content keys the cache of the big install below: editing the code, or another part of
# pyproject.toml, does not download torch again.
FROM ${BASE} AS requirements
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" > requirements.txt

# The dependencies in a venv: the big layer, rebuilt only when requirements.txt changes.
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/fercodec
ENV PATH=/opt/fercodec/bin:$PATH
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
ARG TORCH_INDEX_URL=
RUN pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements.txt && pip check

# fercodec itself, under its own prefix, so the final image adds it as a small layer of its own.
FROM deps AS project
COPY pyproject.toml README.md ./
COPY protos protos
COPY client client
COPY server server
COPY wire wire
COPY models models
RUN pip install --no-deps --prefix /opt/project . \
 && PYTHONPATH=/opt/project/lib/python3.11/site-packages python -c "import ferserver.main, ferserver.engine"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/fercodec/bin:$PATH
RUN groupadd --system --gid 10001 fercodec \
 && useradd --system --uid 10001 --gid fercodec --create-home --home-dir /home/fercodec --shell /usr/sbin/nologin fercodec
COPY --from=deps /opt/fercodec /opt/fercodec
COPY --from=project /opt/project /opt/fercodec
USER fercodec
WORKDIR /home/fercodec
# Every flag has an environment variable FERCODEC_<NAME>; flags given to `docker run` win.
# The metrics page must be reachable from Prometheus in another container. The models are
# the bundled ones unless FERCODEC_MODEL_DIR names others, e.g. on a volume:
#   -v /srv/models:/models:ro -e FERCODEC_MODEL_DIR=/models/my-model
ENV FERCODEC_HOST=0.0.0.0 FERCODEC_PORT=50051 FERCODEC_METRICS_HOST=0.0.0.0 FERCODEC_METRICS_PORT=9100 FERCODEC_DEVICE=auto
EXPOSE 50051 9100
# Healthy once the gRPC health service answers SERVING (models loaded, port open; NOT_SERVING
# while draining). It asks in plaintext on loopback: at $FERCODEC_HEALTH_PORT when that is set
# (a port serving only the health service, so the main port can keep TLS: set it whenever
# FERCODEC_TLS_CERT is), else at $FERCODEC_PORT. Set ports by these variables, not by flags.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; hp = int(os.environ.get('FERCODEC_HEALTH_PORT', '-1')); ch = grpc.insecure_channel('127.0.0.1:' + (str(hp) if hp > 0 else os.environ.get('FERCODEC_PORT', '50051'))); s = g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=4).status; print(h.HealthCheckResponse.ServingStatus.Name(s)); sys.exit(s != h.HealthCheckResponse.SERVING)"]
# Exec form: ferserver is PID 1 and gets SIGTERM itself (docker stop): it stops taking new
# calls, finishes those in flight within --grace-s (default 10 s) and exits 0. Give docker stop
# a longer timeout than that (docker stop -t 15; compose stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ferserver"]
