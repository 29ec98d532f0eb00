# kdns and nodecache in one image: `kdns serve` (the cluster DNS, deploy/kdns) and `nodecache
# serve` (the node-local cache, deploy/nodecache). Build: docker build -t kdns:0.1.0 .
#
# Two stages: the build stage has a C compiler (for the optional UDP accelerator) and pip's
# build machinery; the runtime stage gets only the finished virtual environment.
# deploy/image/install.sh does the install in both this file and tests/deploy/test_image.py.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the wheel is built from (the test copies the same paths before it builds).
COPY pyproject.toml setup.py README.md ./
COPY kdns ./kdns
COPY nodecache ./nodecache
COPY deploy/image/install.sh /usr/local/bin/kdns-install
RUN kdns-install /src /opt/kdns

FROM ${PYTHON_IMAGE}
# nodecache's node plumbing runs iptables, ip6tables, iptables-save and ip (nodecache/node);
# kdns needs neither. Debian's `iptables` is the nft backend (iptables-nft); see docs/install.md
# for nodes whose own iptables is the legacy one.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables iproute2 \
    && rm -rf /var/lib/apt/lists/*
# The same interpreter path as the build stage, so the copied venv's python links resolve.
COPY --from=build /opt/kdns /opt/kdns
# The demo snapshot: `docker run -p 5353:5353/udp kdns:0.1.0` serves it with no cluster.
COPY examples/demo-cluster.yaml /usr/share/kdns/demo-cluster.yaml
ENV PATH=/opt/kdns/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot. nodecache's DaemonSet runs as root (it needs
# NET_ADMIN in the node's network namespace) and sets runAsUser: 0 itself.
USER 65532:65532
EXPOSE 53/udp 53/tcp 8080/tcp
CMD ["kdns", "serve", "--manifests", "/usr/share/kdns/demo-cluster.yaml", \
     "--listen", "0.0.0.0:5353", "--health-listen", "0.0.0.0:8080"]
