"""The system of record: Peewee models and queries over SQLite or PostgreSQL."""
