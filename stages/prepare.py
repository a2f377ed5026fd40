"""DVC stage 'prepare': see ebm.pipeline.prepare."""

from ebm.entry import main
from ebm.pipeline import PreparePaths, prepare

if __name__ == "__main__":
    main(prepare, PreparePaths)
