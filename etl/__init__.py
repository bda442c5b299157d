"""etl: sync DigitalOcean's GenAI model catalog into SQL, with its full history."""

__version__ = "0.1.0"
