"""Drift monitoring: compare a batch of new texts with the champion's reference data, and say whether it drifted.

One module per step, plain functions (the flow in ``flows/monitoring.py`` wraps them):
``descriptors`` (the monitoring columns of a text and scoring by the champion), ``batches`` (reading new texts),
``champion`` (the registry champion and its training data), ``reference`` (the sample a batch is compared with),
``detection`` (the Evidently report and the verdict), ``verdict`` (what a verdict records and how it reads),
``tracking`` (one MLflow run per check), ``merge`` (labelled batch rows added to the data for retraining).
"""
