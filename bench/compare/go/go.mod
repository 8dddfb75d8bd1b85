module braid/bench/compare/go

go 1.19
