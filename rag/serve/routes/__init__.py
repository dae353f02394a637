"""The service's route families, each a module-level APIRouter; the Service comes from rag.serve.deps."""
