FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY setup.cfg pyproject.toml README.md config.toml Procfile ./
COPY access.py http_errors.py ingress.py logs.py metrics.py middleware.py openapi.py settings.py ./
COPY actors ./actors
COPY insights ./insights
COPY ops ./ops
COPY store ./store
COPY scripts ./scripts
RUN pip install --no-cache-dir -e .
EXPOSE 8000 9191
CMD ["scripts/web"]
