"""DVC stage 'train': see ebm.pipeline.train."""

from ebm.entry import main
from ebm.pipeline import TrainPaths, train

if __name__ == "__main__":
    main(train, TrainPaths)
