"""The service's route families, each an APIRouter built over the shared Service."""
