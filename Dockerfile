# One image for both containers: `kube2redis watch` and `kube2redis project`.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY watcher ./watcher
COPY projector ./projector
COPY kube2redis ./kube2redis
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin kube2redis
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'kube2redis==0.1.0' \
    && rm -rf /wheels
RUN mkdir /spool && chown 10001:10001 /spool
USER 10001
ENV PYTHONUNBUFFERED=1
EXPOSE 8080 8081
ENTRYPOINT ["kube2redis"]
CMD ["--help"]
