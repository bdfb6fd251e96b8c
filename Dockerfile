# dtrain with every loader and engine: DALI, FFCV, DeepSpeed, on CUDA.
#   docker build -t dtrain:0.1.0 .
#   docker run --gpus all --shm-size=8g -v /data:/data dtrain:0.1.0 train resnet50 data.root=/data/imagenet
# The entrypoint is `dtrain`; multi-node launchers run /opt/dtrain/launch/torchrun.sh instead.
#
# One CUDA version throughout: the base image's toolkit (nvcc, which DeepSpeed needs to JIT-build
# its CUDA ops against torch's CUDA), torch's build (the default PyPI wheel of TORCH_VERSION is
# built for TORCH_CUDA) and DALI's (the dtrain extra cuda13). tests/unit/test_dockerfile.py checks
# that they agree, and the build stops if the installed torch reports another CUDA.
ARG CUDA_VERSION=13.0.2
FROM nvidia/cuda:${CUDA_VERSION}-cudnn-devel-ubuntu22.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_CUDA=13.0
ARG DTRAIN_EXTRAS=cuda13,ffcv,deepspeed,plot,demo,k8s,auth

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Python 3.10, a compiler, and the Debian packages FFCV builds against (pkg-config, libjpeg-turbo,
# OpenCV). Versions follow the Ubuntu release the base image pins.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-dev python3-venv build-essential ninja-build git \
        pkg-config libturbojpeg0-dev libopencv-dev \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir --upgrade pip==24.3.1 setuptools==75.8.0 wheel==0.45.1

# The package and what the launchers read at run time (launch/, configs/) live in /opt/dtrain.
WORKDIR /opt/dtrain
COPY . /opt/dtrain
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" \
    && python -c "import sys, torch; sys.exit(None if torch.version.cuda == '${TORCH_CUDA}' else \
        f'torch {torch.__version__} is built for CUDA {torch.version.cuda}, the image for ${TORCH_CUDA}')" \
    && pip install --no-cache-dir "/opt/dtrain[${DTRAIN_EXTRAS}]"

# The installed package carries its recipes and templates; these point the launchers at the copy.
ENV DTRAIN_HOME=/opt/dtrain \
    DTRAIN_CONFIGS=/opt/dtrain/configs \
    TORCH_EXTENSIONS_DIR=/home/dtrain/.cache/torch_extensions

# A non-root user with uid 1000, the uid the Kubernetes manifests run as.
RUN groupadd --gid 1000 dtrain \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash dtrain \
    && mkdir -p /workspace "$TORCH_EXTENSIONS_DIR" \
    && chown -R dtrain:dtrain /workspace /home/dtrain
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
WORKDIR /workspace

ENTRYPOINT ["dtrain"]
CMD ["--help"]
