# Custom Dataflow SDK container for `python -m pipeline` on GPU workers, usable as the Flex Template image too.
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/longclip-beam:TAG .
#
# Workers: --sdk_container_image=<this image> (the ENTRYPOINT is the Beam SDK harness, /opt/apache/beam/boot).
# Flex Template: Dataflow runs the launcher binary copied in below, which runs FLEX_TEMPLATE_PYTHON_PY_FILE.

# Python 3.11 Flex Template launcher; only its binary is kept.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base AS template_launcher

# The Beam SDK image, at the apache-beam version of requirements.txt (its Beam, with the [gcp] extras,
# is kept as it is: nothing below reinstalls apache-beam).
FROM apache/beam_python3.11_sdk:2.77.0

COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# CUDA builds of torch/torchvision from the PyTorch wheel index. cu128 (CUDA 12.8) was chosen because its
# wheels bring their own CUDA runtime and need only an NVIDIA driver >= 525 on the worker (CUDA 12
# minor-version compatibility; 525 is also the minimum Google gives for L4s on Dataflow), and they cover
# the L4's sm_89. The cu130 build (CUDA 13, the one the project's own environment runs) needs a driver
# >= 580, which `install-nvidia-driver` may not give: build with `--build-arg TORCH_CUDA=cu130` only
# where it does. The versions are the pins of requirements.txt (tests/test_dataflow.py checks them).
ARG TORCH_CUDA=cu128
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
RUN pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

WORKDIR /template
# The runtime pins, requirements.txt as it is (apache-beam and torch/torchvision are already there, at its pins,
# so pip keeps them; test and lint tools live in requirements-dev.txt, which the image never sees).
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# This package (`transforms`, `pipeline`); its dependencies are all installed above.
COPY setup.py README.md ./
COPY transforms ./transforms
COPY pipeline ./pipeline
COPY dataflow/flex_template_main.py ./flex_template_main.py
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import apache_beam, torch, torchvision, open_clip, pipeline.job; \
assert apache_beam.__version__ == '2.77.0', apache_beam.__version__; \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; \
assert torch.version.cuda, 'torch is a CPU-only build'"

# Optional: a checkpoint baked into the image, so that workers copy nothing when they start. MODEL is what
# --model will be: a Hub id (the build needs internet access) or a gs:// URI (the build must be able to read
# the bucket: dataflow/cloudbuild.yaml gives Cloud Build's docker build its credentials). Workers given the
# same --model find this copy in $LONGCLIP_PRELOADED_DIR; any other --model is copied once per VM as usual.
#   docker build --platform linux/amd64 --build-arg MODEL=BeichenZhang/LongCLIP-L-336px -t $IMAGE .
ARG MODEL=
ENV LONGCLIP_PRELOADED_DIR=/opt/longclip/preloaded
RUN mkdir -p "$LONGCLIP_PRELOADED_DIR" \
    && if [ -n "$MODEL" ]; then LONGCLIP_CACHE_DIR="$LONGCLIP_PRELOADED_DIR" python -c \
        'import sys; from transforms.model.locate import resolve_checkpoint; print("Baked", resolve_checkpoint(sys.argv[1]))' \
        "$MODEL"; fi

# For the Flex Template launcher: the file it runs. No FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE or
# FLEX_TEMPLATE_PYTHON_SETUP_FILE: everything is installed in this image, so nothing is staged for workers.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/flex_template_main.py

ENTRYPOINT ["/opt/apache/beam/boot"]
