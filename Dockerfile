FROM python:3.11-slim
WORKDIR /app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY setup.cfg pyproject.toml README.md ./
COPY ingress.py settings.py config.toml ./
COPY actors ./actors
COPY insights ./insights
COPY ops ./ops
COPY store ./store
RUN pip install --no-cache-dir -e .
EXPOSE 8000
CMD ["sh", "-c", "uvicorn ingress:app --host 0.0.0.0 --port ${PORT:-8000} --no-access-log"]
