"""ORM tables, all in one place so that domains never import each other in circles."""

from app.db.base import Base
from app.db.models import (
    ACTIVE_TRAINING,
    RUNNING_TRAINING,
    ApiKey,
    DeliveryAttempt,
    DeliveryStatus,
    Lock,
    Model,
    Notification,
    Photo,
    PhotoStatus,
    Subject,
    Training,
    TrainingStatus,
    User,
)

__all__ = [
    "ACTIVE_TRAINING",
    "RUNNING_TRAINING",
    "ApiKey",
    "Base",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Lock",
    "Model",
    "Notification",
    "Photo",
    "PhotoStatus",
    "Subject",
    "Training",
    "TrainingStatus",
    "User",
]
