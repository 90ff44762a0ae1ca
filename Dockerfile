# aerialdet image: Ray + the aerialdet console script. CPU torch by default;
# pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 for CUDA.
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 RAY_AUTH_MODE=disabled
RUN pip install --no-cache-dir --index-url ${TORCH_INDEX} "torch>=2.2" "torchvision>=0.17"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY retinanet ./retinanet
COPY jobs ./jobs
RUN pip install --no-cache-dir .
