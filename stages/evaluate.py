"""DVC stage 'evaluate': see ebm.pipeline.evaluate."""

from ebm.entry import main
from ebm.pipeline import EvaluatePaths, evaluate

if __name__ == "__main__":
    main(evaluate, EvaluatePaths)
