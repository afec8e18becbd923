# ferclient: the edge image. No torch, no CompressAI, no OpenCV: ONNX Runtime, Pillow, constriction (where it has a wheel).
#   docker build -f docker/client.Dockerfile -t fercodec-client .
#   docker run --rm --network host -v "$PWD:/data" fercodec-client send photo.jpg
# `ferclient watch` (video) needs OpenCV: add it with --build-arg EXTRAS=video (about 170 MB more).
# BASE is any Debian-like image with Python 3.11, `python -m venv` and CA certificates.
ARG BASE=python:3.11-slim

# The base dependencies as a requirements file; only its content keys the cache of the install below.
FROM ${BASE} AS requirements
ARG EXTRAS=""
WORKDIR /src
COPY pyproject.toml ./
RUN EXTRAS="$EXTRAS" python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + [d for e in filter(None, os.environ['EXTRAS'].split(',')) for d in p['optional-dependencies'][e]]))" > requirements.txt

# The dependencies in a venv, rebuilt only when requirements.txt changes.
FROM ${BASE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/fercodec
ENV PATH=/opt/fercodec/bin:$PATH
WORKDIR /src
COPY --from=requirements /src/requirements.txt ./
RUN pip install -r requirements.txt && pip check

# What the final image takes: the same venv without what the client never loads: pip and setuptools, test suites,
# type stubs, numpy's build tools, C headers and SIMD test module, Pillow's text rendering (FreeType, HarfBuzz),
# ONNX Runtime's model-tooling packages and its C-API library (the Python binding links the runtime in itself).
# tests/docker runs the image end to end without them and prints its size.
FROM deps AS runtime-deps
RUN pip uninstall -q -y pip setuptools \
 && cd "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf onnxruntime/capi/libonnxruntime.so.* onnxruntime/transformers onnxruntime/quantization onnxruntime/tools \
 && rm -rf numpy/distutils numpy/f2py numpy/_pyinstaller numpy/*/include numpy/*/lib numpy/random/_examples numpy/*/_simd.*.so \
 && rm -f PIL/_imagingft.*.so pillow.libs/libfreetype-*.so* pillow.libs/libharfbuzz-*.so* pillow.libs/libbrotli*.so* \
 && find numpy -type d -name tests -prune -exec rm -rf {} + && find . -name '*.pyi' -delete \
 && python -c "import importlib.util, platform, numpy, onnxruntime, grpc; from PIL import Image; Image.init(); print(len(Image.OPEN), 'image formats'); \
importlib.util.find_spec('constriction') and __import__('constriction') or print('no constriction on', platform.machine(), '(ferwire.rangecoder encodes)')"

# fercodec itself, under its own prefix, so the final image adds it as a small layer of its own.
# The package carries the server's torch weights too (*.pt): the edge never loads them.
FROM deps AS project
COPY pyproject.toml README.md ./
COPY protos protos
COPY client client
COPY server server
COPY wire wire
COPY models models
RUN pip install --no-deps --prefix /opt/project . \
 && find /opt/project -path '*/fermodels/weights/*' -name '*.pt' -delete \
 && PYTHONPATH=/opt/project/lib/python3.11/site-packages python -c "import ferclient.cli, ferclient.encoder, ferclient.faces"

FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/fercodec/bin:$PATH HOME=/tmp
COPY --from=runtime-deps /opt/fercodec /opt/fercodec
COPY --from=project /opt/project /opt/fercodec
# Any non-root user works (HOME is /tmp); to write --reconstruct files into /data as
# yourself: docker run --user "$(id -u):$(id -g)" ...
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["ferclient"]
CMD ["--help"]
