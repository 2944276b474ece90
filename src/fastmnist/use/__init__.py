"""Using a trained model: checkpoint.py (weights with their recipe), and the commands evaluate.py,
predict.py and export.py."""
