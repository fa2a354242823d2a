"""Model helpers shared by the stages: CLIP features and the tiny test models' text parts."""
