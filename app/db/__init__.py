"""ORM tables, all in one place so that domains never import each other in circles."""

from app.db.base import Base
from app.db.models import ApiKey, Photo, PhotoStatus, Subject, User

__all__ = ["ApiKey", "Base", "Photo", "PhotoStatus", "Subject", "User"]
