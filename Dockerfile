FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# The whole build context but what .dockerignore leaves out: every module, config.toml, Procfile, scripts.
COPY . .
RUN pip install --no-cache-dir .
EXPOSE 8000 9191
CMD ["scripts/web"]
