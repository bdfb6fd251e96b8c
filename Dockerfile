# dtrain with every loader and engine: DALI, FFCV, DeepSpeed, on CUDA.
#   docker build -t dtrain:0.1.0 .
#   docker run --gpus all --shm-size=8g -v /data:/data dtrain:0.1.0 train resnet50 data.root=/data/imagenet
# The entrypoint is `dtrain`; multi-node launchers run /opt/dtrain/launch/torchrun.sh instead.
#
# The devel flavour brings nvcc, which DeepSpeed needs to JIT-build its CUDA ops; PyTorch's wheel
# brings its own CUDA runtime, so the base only has to match the driver (CUDA 12.x).
FROM nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04

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
RUN pip install --no-cache-dir "/opt/dtrain[dali,ffcv,deepspeed]"

# Recipes and the k8s templates are found through these (the package itself is in site-packages).
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
