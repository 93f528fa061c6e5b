"""MLflow tracking: the store (:mod:`.store`), run lifecycle, tags and params (:mod:`.runs`),
comparison tables (:mod:`.compare`) and ``python -m stellarexp.tracking.ui``.

Importing this package imports nothing heavy; mlflow is imported by the functions using it.
"""
